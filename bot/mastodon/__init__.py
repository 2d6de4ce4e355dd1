"""The Mastodon side: the API client, watching feeds (stream and polled catch-up), post text, edits and deletes."""
