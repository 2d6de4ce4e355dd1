"""The tables: every mention, the tickets they open, their SLA clocks, the Slack outbox, the stream cursors, the
dead letters, the scheduled summaries and the agents' labels for the classifier."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, false, text, true
from sqlmodel import Field, SQLModel

from mentiondesk.storage.types import UTCDateTime, utcnow


class TicketState:
    OPEN = "open"
    # Waiting on the customer: an agent asked them something; their SLA clocks are paused until they post again.
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"
    # Borderline (score between the two thresholds, or a language the model does not cover): posted to the triage
    # channel for an agent to open as a ticket or dismiss; no SLA clock runs until it is opened.
    TRIAGE = "triage"


class TicketKind:
    """What a ticket is about (tickets.label): the classifier's verdict, corrected by agents."""

    COMPLAINT = "complaint"
    QUESTION = "question"
    OTHER = "other"  # an agent said "Not a complaint"


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (
        # Every message in a Slack channel the bot is in is checked against this: is it in a ticket's thread?
        Index("ix_tickets_slack_message", "channel", "slack_ts"),
        # The reports count tickets opened, answered and resolved in a period (storage/reports.py): migration 0006.
        Index("ix_tickets_created_at", "created_at"),
        Index("ix_tickets_first_response_at", "first_response_at"),
        Index("ix_tickets_resolved_at", "resolved_at"),
        # The per-channel, per-priority and per-agent figures join the period's clocks to their tickets for these.
        Index("ix_tickets_report_groups", "id", "channel", "priority", "assignee_slack_id"),
    )

    # The primary key doubles as the ticket number agents see ("Ticket #42").
    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(default=TicketState.OPEN, max_length=16, index=True)
    priority: str = Field(default="normal", max_length=16)
    customer_account_id: str = Field(max_length=64, index=True)
    customer_acct: str = Field(max_length=512)
    customer_display_name: str = Field(default="", max_length=512)
    customer_url: str = Field(default="", max_length=2048)
    root_status_id: str = Field(max_length=64)
    posted_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    score: float
    channel: str = Field(max_length=128)
    slack_ts: str | None = Field(default=None, max_length=64)
    # The first-response clock's due time (sla_clocks holds every clock): None when the ticket's policy sets no
    # first-response target, and while the clock is paused.
    first_response_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Bumped on every change so concurrent writers can update conditionally.
    version: int = Field(default=1)
    label: str = Field(default="complaint", max_length=16)
    assignee_slack_id: str | None = Field(default=None, max_length=32)
    first_response_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_reason: str | None = Field(default=None, max_length=200)
    last_customer_activity_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Tags from the keyword rules of [[classifier.categories]] (delivery, billing, ...), shown on the card.
    categories: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=text("'[]'"))
    )
    # Why the ticket has its priority ("outage words: down", "4,210 followers"), shown on the card.
    priority_reasons: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=text("'[]'"))
    )
    # Why it went to triage rather than straight to a ticket, and where that triage message is: kept after an agent
    # opens it, so the triage message can be updated to say who decided what.
    triage_reason: str | None = Field(default=None, max_length=200)
    triage_channel: str | None = Field(default=None, max_length=128)
    triage_ts: str | None = Field(default=None, max_length=64)
    # A customer who comes back after the reopen window gets a new ticket pointing at the old one.
    previous_ticket_id: int | None = Field(default=None, foreign_key="tickets.id")


class Mention(SQLModel, table=True):
    __tablename__ = "mentions"

    id: int | None = Field(default=None, primary_key=True)
    # The status URI is globally unique across the fediverse; a unique key on it makes ingest idempotent.
    status_uri: str = Field(max_length=2048, unique=True)
    status_id: str = Field(max_length=64, index=True)
    status_url: str = Field(max_length=2048)
    in_reply_to_id: str | None = Field(default=None, max_length=64)
    account_id: str = Field(max_length=64, index=True)
    account_acct: str = Field(max_length=512)
    account_display_name: str = Field(default="", max_length=512)
    account_url: str = Field(default="", max_length=2048)
    text: str = Field(sa_column=Column(Text, nullable=False))
    language: str | None = Field(default=None, max_length=16)
    visibility: str = Field(default="public", max_length=16)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source: str = Field(max_length=32)
    posted_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    label: str = Field(max_length=16)
    score: float
    ticket_id: int | None = Field(default=None, foreign_key="tickets.id", index=True)
    edited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # False when the post's own time was missing or unreadable: posted_at is then when it was received.
    posted_at_known: bool = Field(default=True, sa_column_kwargs={"server_default": true()})


class LabelSource:
    """Which agent decision a classifier label comes from."""

    NOT_COMPLAINT = "card_not_complaint"  # "Not a complaint" on a ticket's card
    TRIAGE_OPEN = "triage_open"  # "Open ticket" in the triage channel
    TRIAGE_DISMISS = "triage_dismiss"  # "Not a complaint" in the triage channel
    REACTION = "reaction"  # a reaction emoji on a card (slack.label_reactions)
    KIND = "kind"  # the ticket's kind changed by an agent (complaint <-> question)


class ClassifierLabel(SQLModel, table=True):
    """An agent's judgement of a post, kept as a training label for `mentiondesk classifier train`.

    No copy of the text: training reads it from the mention, so retention and `forget` erase it in one place and a
    label whose post was erased drops out of training.
    """

    __tablename__ = "classifier_labels"

    id: int | None = Field(default=None, primary_key=True)
    mention_id: int = Field(foreign_key="mentions.id", index=True)
    ticket_id: int | None = Field(default=None, foreign_key="tickets.id")
    label: str = Field(max_length=16)  # TicketKind
    source: str = Field(max_length=32)  # LabelSource
    agent_slack_id: str = Field(max_length=32)
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Note(SQLModel, table=True):
    """An agent's message in the ticket's Slack thread: internal, never sent to the customer."""

    __tablename__ = "notes"
    __table_args__ = (UniqueConstraint("slack_channel", "slack_ts", name="uq_notes_slack_message"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    author_slack_id: str = Field(max_length=32)
    text: str = Field(sa_column=Column(Text, nullable=False))
    slack_channel: str = Field(max_length=32)
    slack_ts: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Who sent this note to the customer (slack.thread_replies = "confirm"); set once, by a conditional update.
    sent_by: str | None = Field(default=None, max_length=32)


class SlaClockKind:
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class SlaClock(SQLModel, table=True):
    """One SLA clock of a ticket, from the customer's post to the reply (or Resolve) that stops it.

    The due, warning and escalation instants are business-time results on the policy's calendar with the
    ticket's pauses left out; one not reached yet is None while the ticket is paused. A clock is running while
    achieved_at is None; stopping it stores what it measured (pauses left out), kept whatever the policy later
    becomes. bot/sla/clocks.py keeps these rows; storage/sla.py reads them.
    """

    __tablename__ = "sla_clocks"
    __table_args__ = (
        UniqueConstraint("ticket_id", "kind", "seq", name="uq_sla_clocks_ticket_kind_seq"),
        # The reports read the clocks stopped in a period, and the breaches in it, from these alone: migration 0006.
        Index("ix_sla_clocks_report", "achieved_at", "kind", "business_s", "wall_s", "breached", "ticket_id"),
        Index("ix_sla_clocks_breached_at", "breached_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    kind: str = Field(max_length=16)  # SlaClockKind
    seq: int = Field(default=0)  # 0, or 1, 2, ... for a ticket's next-response clocks in order
    # What it is measured against, by name: the policy and calendar in force when it was last computed.
    policy: str = Field(max_length=200)
    calendar: str = Field(max_length=200)
    target_s: int
    started_at: datetime = Field(sa_type=UTCDateTime)  # the customer's post, by its own (Mastodon) time
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    warn_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # the policy's warning share reached
    escalate_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # the manager level, if configured
    # Indexed: every running clock (achieved_at NULL) is read at each start.
    achieved_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    # Set when the clock stops: the time it ran, pauses left out, by the wall clock and in open business time.
    wall_s: float | None = None
    business_s: float | None = None
    breached: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    breached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SlaPauseReason:
    WAITING = "waiting"  # waiting on the customer
    RESOLVED = "resolved"  # resolved or closed, until reopened


class SlaPause(SQLModel, table=True):
    """A stretch of time that counts against none of the ticket's clocks; at most one is open (ended_at None)."""

    __tablename__ = "sla_pauses"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str = Field(max_length=16)  # SlaPauseReason


class SlaAlertLevel:
    WARNING = "warning"
    BREACH = "breach"
    MANAGER = "manager"


class SlaAlert(SQLModel, table=True):
    """An SLA warning or escalation sent: the unique key makes each one go out once, across restarts and daemons."""

    __tablename__ = "sla_alerts"
    __table_args__ = (UniqueConstraint("clock_id", "level", name="uq_sla_alerts_clock_level"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    clock_id: int = Field(foreign_key="sla_clocks.id")
    level: str = Field(max_length=16)  # SlaAlertLevel
    sent_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReplyState:
    PENDING_APPROVAL = "pending_approval"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    REJECTED = "rejected"
    FAILED = "failed"


class Reply(SQLModel, table=True):
    """A public reply to the customer, and its audit trail: who wrote it, who approved it, what was posted."""

    __tablename__ = "replies"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    author_slack_id: str = Field(max_length=32)
    approver_slack_id: str | None = Field(default=None, max_length=32)
    text: str = Field(sa_column=Column(Text, nullable=False))
    visibility: str = Field(max_length=16)
    in_reply_to_status_id: str = Field(max_length=64)
    state: str = Field(max_length=20, index=True)
    mastodon_status_id: str | None = Field(default=None, max_length=64)
    mastodon_url: str | None = Field(default=None, max_length=2048)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    approval_channel: str | None = Field(default=None, max_length=32)
    approval_ts: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TicketEvent(SQLModel, table=True):
    """What happened to a ticket, by whom: claims, state changes, replies, customer activity."""

    __tablename__ = "ticket_events"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OutboxState:
    PENDING = "pending"
    # Slack refused it for a reason a person must fix (bot not in the channel, token revoked); last_error says
    # which. Still tried, on a slow schedule and at each start, so it goes out once the cause is fixed.
    PARKED = "parked"
    SENT = "sent"


class OutboxKind:
    CARD = "card"
    FOLLOWUP = "followup"  # a message in the card's thread
    UPDATE = "update"  # re-render the card in place (chat.update) from the ticket's current state
    ALERT = "alert"  # a message of its own in row.channel, outside the card's thread (an SLA breach's escalation)
    # A borderline post's message in row.channel (the triage channel), with "Open ticket" / "Not a complaint";
    # rendered from the ticket when sent, its ts kept in tickets.triage_ts.
    TRIAGE = "triage"
    TRIAGE_UPDATE = "triage_update"  # re-render the triage message in place: an agent decided, a follow-up came


class SlackOutbox(SQLModel, table=True):
    """Slack messages waiting to be sent; rows survive restarts and Slack outages."""

    __tablename__ = "slack_outbox"
    __table_args__ = (Index("ix_slack_outbox_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    mention_id: int | None = Field(default=None, foreign_key="mentions.id")
    channel: str = Field(max_length=128)
    text: str = Field(sa_column=Column(Text, nullable=False))
    blocks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    state: str = Field(default=OutboxState.PENDING, max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    slack_ts: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Cursor(SQLModel, table=True):
    """Where each Mastodon feed was last read up to, so a restart resumes there."""

    __tablename__ = "cursors"

    name: str = Field(primary_key=True, max_length=200)
    value: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeadLetter(SQLModel, table=True):
    """A feed entry that could not be read or stored: set aside, with why and as it came, so the feed moves on."""

    __tablename__ = "dead_letters"
    # The same entry read again (by the stream and a poll, or by two daemons) updates its row instead of adding one.
    __table_args__ = (UniqueConstraint("feed", "item_key", name="uq_dead_letters_feed_item"),)

    id: int | None = Field(default=None, primary_key=True)
    feed: str = Field(max_length=200)  # the feed's cursor name
    # The entry's id in the feed (a notification's, or a status's on a hashtag feed); without one, its status's id
    # ("status:<id>") or a digest of its JSON ("sha256:<hex>").
    item_key: str = Field(max_length=80)
    status_id: str | None = Field(default=None, max_length=64)
    status_uri: str | None = Field(default=None, max_length=2048)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the entry as it was read, as JSON
    attempts: int = Field(default=1)
    first_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class SummaryState:
    SCHEDULED = "scheduled"  # due at due_at, not yet taken by a daemon
    POSTING = "posting"  # a daemon claimed it at claimed_at and is posting it
    POSTED = "posted"
    # Slack refused it for a reason a person must fix (last_error says which); tried again at each start.
    PARKED = "parked"


class ReportSummary(SQLModel, table=True):
    """One scheduled summary (daily or weekly) for one period: the unique key makes it go out once, across
    restarts and daemons. A row is written for the next one before it is due, so one missed while no daemon
    ran is found and posted (late) when one starts again. bot/reports/schedule.py keeps these rows."""

    __tablename__ = "report_summaries"
    __table_args__ = (UniqueConstraint("kind", "period_start", name="uq_report_summaries_kind_period"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "daily" | "weekly"
    period_start: datetime = Field(sa_type=UTCDateTime)
    period_end: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    state: str = Field(default=SummaryState.SCHEDULED, max_length=16)
    # Who holds a POSTING row (a random token per claim) and since when: a claim older than the lease belongs
    # to a daemon that stopped mid-post, and another may take it over.
    claim_token: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = Field(default=0)
    channel: str | None = Field(default=None, max_length=128)
    slack_ts: str | None = Field(default=None, max_length=64)  # the summary message, once Slack has it
    chart_file_id: str | None = Field(default=None, max_length=64)  # the chart, once uploaded into its thread
    late: bool = Field(default=False)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    posted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def max_length(*columns: Any) -> int:
    """The narrowest declared length of these string columns (Mention.language, ...): what a value must fit."""
    # At class level a field is SQLAlchemy's column attribute, though typed as its value.
    return min(int(column.type.length) for column in columns)
