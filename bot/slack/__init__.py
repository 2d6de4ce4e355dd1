"""The Slack side: the outbox sender, cards, the bolt app (Socket Mode or signed HTTP), the Reply modal, permissions."""
