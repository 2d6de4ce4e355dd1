"""SLA warnings and escalations: each sent exactly once, through the outbox, and only for a clock still running.

Three levels, each at an instant the clock stores (bot/sla/clocks.py computes them):

- warning, at warn_at (a share of the target, sla.warn_at): a message in the ticket's thread mentioning the
  assignee, or the on-call user group (sla.oncall_group) while nobody has claimed the ticket.
- breach, at due_at: an alert in sla.escalation_channel naming the ticket and linking to its card (in the
  ticket's thread when no escalation channel is set); the clock is marked breached.
- manager, at escalate_at (sla.manager_at times the target, when sla.manager_group is set): the manager group
  mentioned in the escalation channel.

One transaction does it all: the sla_alerts row (unique per clock and level), the check that the ticket is open
and its clock running and not paused, the outbox rows and a refresh of the card (its badge changes at the warning
and the breach). The alert row is inserted first, with ON CONFLICT DO NOTHING: a second daemon (or a second run
after a restart) finds it and sends nothing; on SQLite that first write also takes the database's write lock, so
the check reads what every committed change left. On Postgres the ticket's row is then locked, as an agent's
change locks it first too: a reply or pause committed meanwhile is seen, one in flight waits. When the check
fails the transaction is rolled back, alert row included: a clock that resumes later still gets its alert.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot import metrics
from mentiondesk.bot.sla.badge import CLOCK_NAMES, short, slack_date
from mentiondesk.bot.sla.calendar import format_duration
from mentiondesk.bot.sla.policy import SlaBook
from mentiondesk.storage import sla
from mentiondesk.storage.models import OutboxKind, SlaAlertLevel, TicketState
from mentiondesk.storage.outbox import enqueue
from mentiondesk.storage.sla import ClockState, DueAlert
from mentiondesk.storage.ticket_actions import log_event, queue_card_refresh

logger = logging.getLogger(__name__)

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,30}")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]+")


class _NotNow(Exception):
    """The alert is not to be sent (any more): roll its row back."""


@dataclass(frozen=True)
class Message:
    kind: str  # OutboxKind.FOLLOWUP (the ticket's thread) or OutboxKind.ALERT (row channel)
    channel: str
    text: str

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return [{"type": "section", "text": {"type": "mrkdwn", "text": self.text}}]


def card_link(channel: str | None, ts: str | None) -> str:
    """A link to the card in Slack, once it is there: Slack's archive link opens the message in any workspace."""
    if not channel or not ts or not _CHANNEL_ID.fullmatch(channel):
        return ""
    return f"<https://slack.com/archives/{channel}/p{ts.replace('.', '')}|open the card>"


def _where(ticket: RowMapping) -> str:
    channel = str(ticket["channel"] or "")
    shown = f"<#{channel}>" if _CHANNEL_ID.fullmatch(channel) else channel.replace("<", "").replace(">", "")
    link = card_link(channel, ticket["slack_ts"])
    return f"Ticket #{ticket['id']}" + (f" in {shown}" if shown else "") + (f" ({link})" if link else "")


def _assignee(ticket: RowMapping) -> str | None:
    who = ticket["assignee_slack_id"]
    return f"<@{who}>" if who and _SLACK_USER.fullmatch(who) else None


def messages(book: SlaBook, level: str, ticket: RowMapping, clock: ClockState, now: datetime) -> list[Message]:
    """What one alert says, and where."""
    name = CLOCK_NAMES.get(clock.kind, clock.kind).lower()
    target = format_duration(clock.target)
    assert clock.due_at is not None
    due = slack_date(clock.due_at)
    if level == SlaAlertLevel.WARNING:
        who = _assignee(ticket) or (f"<!subteam^{book.oncall_group}>" if book.oncall_group else "")
        text = (
            f"{who} \N{LARGE ORANGE CIRCLE} SLA at risk: {name} due {due}, "
            f"{short(clock.due_at - now)} left of {target}."
        ).strip()
        return [Message(OutboxKind.FOLLOWUP, str(ticket["channel"]), text)]
    assigned = _assignee(ticket)
    holder = f"claimed by {assigned}" if assigned else "unclaimed"
    if level == SlaAlertLevel.BREACH:
        text = f"\N{LARGE RED CIRCLE} SLA breached: {_where(ticket)}, {name} was due {due} ({target}), {holder}."
        if book.escalation_channel:
            return [Message(OutboxKind.ALERT, book.escalation_channel, text)]
        return [Message(OutboxKind.FOLLOWUP, str(ticket["channel"]), text)]
    if level == SlaAlertLevel.MANAGER and book.manager_group and book.escalation_channel:
        text = (
            f"<!subteam^{book.manager_group}> \N{LARGE RED CIRCLE} SLA escalation: {_where(ticket)}, {name} "
            f"still not met at {book.manager_at:g}\N{MULTIPLICATION SIGN} its {target} target (due {due}), {holder}."
        )
        return [Message(OutboxKind.ALERT, book.escalation_channel, text)]
    return []


def _instant(clock: ClockState, level: str) -> datetime | None:
    return {
        SlaAlertLevel.WARNING: clock.warn_at,
        SlaAlertLevel.BREACH: clock.due_at,
        SlaAlertLevel.MANAGER: clock.escalate_at,
    }.get(level)


async def _send_in(
    session: AsyncSession, book: SlaBook, alert: DueAlert, now: datetime, *, counted: list[ClockState]
) -> bool:
    """Record and queue one alert; a warning sent or a breach recorded adds its clock to `counted`, which the
    caller counts for /metrics once the transaction has committed."""
    if not await sla.record_alert(
        session, ticket_id=alert.ticket_id, clock_id=alert.clock_id, level=alert.level, at=now
    ):
        return False  # sent already, by this daemon before a restart or by another one
    ticket = await sla.lock_ticket(session, alert.ticket_id)
    clock = next((c for c in await sla.ticket_clocks(session, alert.ticket_id) if c.id == alert.clock_id), None)
    instant = _instant(clock, alert.level) if clock is not None else None
    if (
        ticket is None
        or ticket["state"] != TicketState.OPEN
        or clock is None
        or not clock.running
        or clock.paused is not None
        or clock.due_at is None
        or instant is None
        or instant > now
    ):
        raise _NotNow
    if alert.level == SlaAlertLevel.BREACH:
        await sla.mark_breached(session, clock_id=clock.id, at=clock.due_at)
    # A warning whose breach has come too says nothing the breach alert does not: recorded, not sent.
    late_warning = alert.level == SlaAlertLevel.WARNING and clock.due_at <= now
    queued = [] if late_warning else messages(book, alert.level, ticket, clock, now)
    if alert.level == SlaAlertLevel.BREACH or (alert.level == SlaAlertLevel.WARNING and queued):
        counted.append(clock)
    for message in queued:
        enqueue(
            session,
            kind=message.kind,
            ticket_id=alert.ticket_id,
            channel=message.channel,
            text=message.text,
            blocks=message.blocks,
        )
    log_event(session, ticket_id=alert.ticket_id, actor="sla", action=f"sla_{alert.level}", detail=clock.kind)
    if alert.level in (SlaAlertLevel.WARNING, SlaAlertLevel.BREACH):
        await queue_card_refresh(session, ticket_id=alert.ticket_id)  # the badge changes stage
    return bool(queued)


async def send_alert(
    sessions: async_sessionmaker[AsyncSession], book: SlaBook, alert: DueAlert, *, now: datetime
) -> bool:
    """Send one alert if it is still due and not sent yet; True when this call queued a message for it (a warning
    recorded after its breach has come is not sent)."""
    counted: list[ClockState] = []
    try:
        async with sessions() as session, session.begin():
            sent = await _send_in(session, book, alert, now, counted=counted)
    except _NotNow:
        return False
    # Committed: now it happened, for /metrics.
    for clock in counted:
        counter = metrics.SLA_BREACHES if alert.level == SlaAlertLevel.BREACH else metrics.SLA_WARNINGS
        counter.labels(policy=clock.policy, kind=clock.kind).inc()
    return sent


async def send_due_alerts(sessions: async_sessionmaker[AsyncSession], book: SlaBook, *, now: datetime) -> int:
    """Every alert whose instant has come and that was not sent yet, one transaction each; how many were sent."""
    async with sessions() as session:
        due = await sla.due_alerts(session, until=now)
    sent = 0
    for alert in due:
        if await send_alert(sessions, book, alert, now=now):
            sent += 1
            logger.info(
                "SLA %s for ticket #%d (clock %d) queued",
                alert.level,
                alert.ticket_id,
                alert.clock_id,
                extra={"ticket_id": alert.ticket_id},
            )
    return sent
