"""The slash command (slack.slash_command, /mentiondesk by default): mine, open, show N, stats; answered privately.

register() only gets the app, and the command's name lives in the settings the app's middleware puts in
the context. So the listener takes any command and a matcher, which runs after that middleware, keeps
only ours: other commands stay free for other listeners, and renaming the command needs no code.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time
from typing import Any

from slack_bolt.async_app import AsyncApp
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from mentiondesk.bot.context import AppContext
from mentiondesk.bot.sla.badge import EMOJI, Stage, badge, stage_of
from mentiondesk.bot.slack.cards import escape_mrkdwn
from mentiondesk.bot.slack.inbound import MAX_ROW_NUMBER
from mentiondesk.storage import queries_desk, sla
from mentiondesk.storage.models import Reply, ReplyState, Ticket, TicketState
from mentiondesk.storage.types import utcnow

logger = logging.getLogger(__name__)

LIST_LIMIT = 20
SECTION_MAX = 3000
REPLIES_SHOWN = 10


def _date(when: datetime) -> str:
    """Slack shows this in each reader's time zone; the UTC text is the fallback."""
    fallback = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _ref(ticket: Ticket) -> str:
    """How a ticket is named in answers: its number and the channel its card is in."""
    return f"*#{ticket.id}* in <#{ticket.channel}>"


def _customer(ticket: Ticket) -> str:
    return escape_mrkdwn("@" + ticket.customer_acct)


def _first_response(ticket: Ticket, now: datetime) -> str:
    """Where the ticket stands against its first-response target."""
    due = ticket.first_response_due_at
    if ticket.first_response_at is not None:
        verdict = "" if due is None else " (within SLA)" if ticket.first_response_at <= due else " (late)"
        return f"responded {_date(ticket.first_response_at)}{verdict}"
    if ticket.state == TicketState.WAITING:
        return "paused while waiting on the customer"
    if ticket.state == TicketState.TRIAGE:
        return "not started: in triage until an agent opens it"
    if ticket.state != TicketState.OPEN:
        return "closed without a public response"
    if due is None:
        return "no first-response target"
    return f"first response due {_date(due)}" + (" *(overdue)*" if due <= now else "")


def _sla(ticket: Ticket, now: datetime, clock: sla.ClockState | None) -> str:
    """The badge of the clock the ticket shows, as on its card; without a clock, its first-response state."""
    return badge(clock, now).text if clock is not None else f"SLA: {_first_response(ticket, now)}"


def _state(ticket: Ticket) -> str:
    if ticket.state == TicketState.WAITING:
        return "waiting on the customer"
    return ticket.state + (f" ({escape_mrkdwn(ticket.closed_reason)})" if ticket.closed_reason else "")


def _line(ticket: Ticket, now: datetime, clock: sla.ClockState | None) -> str:
    who = f"claimed by <@{ticket.assignee_slack_id}>" if ticket.assignee_slack_id else "unclaimed"
    waiting = " · waiting on the customer" if ticket.state == TicketState.WAITING else ""
    sla_state = _sla(ticket, now, clock)
    return f"{_ref(ticket)} · {_customer(ticket)} · {ticket.priority} priority · {who}{waiting} · {sla_state}"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_MAX]}}


async def _list_answer(
    session: AsyncSession, title: str, tickets: list[Ticket], empty: str
) -> tuple[str, list[dict[str, Any]]]:
    if not tickets:
        return empty, [_section(empty)]
    now = utcnow()
    more = " (the oldest 20)" if len(tickets) > LIST_LIMIT else ""
    shown = tickets[:LIST_LIMIT]
    clocks = await sla.shown_clocks(session, [t.id for t in shown if t.id is not None])
    heading = f"*{title}*: {len(shown)}{more}"
    lines = [_section(_line(t, now, clocks.get(t.id or 0))) for t in shown]
    return f"{title}: {len(shown)}{more}", [_section(heading), *lines]


async def answer_mine(session: AsyncSession, user: str) -> tuple[str, list[dict[str, Any]]]:
    tickets = await queries_desk.open_tickets_assigned(session, assignee=user, limit=LIST_LIMIT + 1)
    return await _list_answer(session, "Your open tickets", tickets, "You have no open tickets.")


async def answer_open(session: AsyncSession) -> tuple[str, list[dict[str, Any]]]:
    tickets = await queries_desk.unclaimed_open_tickets(session, limit=LIST_LIMIT + 1)
    title, empty = "Open and unclaimed, oldest first", "No open ticket is waiting to be claimed."
    return await _list_answer(session, title, tickets, empty)


def _reply_line(reply: Reply) -> str:
    by = f"<@{reply.author_slack_id}>"
    if reply.approver_slack_id:
        by += f" (approved by <@{reply.approver_slack_id}>)"
    if reply.state == ReplyState.PUBLISHED and reply.published_at is not None:
        where = f"<{reply.mastodon_url}|{reply.visibility} reply>" if reply.mastodon_url else reply.visibility
        return f"• {by} {_date(reply.published_at)}: {where}"
    return f"• {by} {_date(reply.created_at)}: {reply.state.replace('_', ' ')}"


async def answer_show(session: AsyncSession, number: int) -> tuple[str, list[dict[str, Any]]]:
    # Beyond a row id's range no ticket can exist, and asking Postgres would fail instead of finding none.
    ticket = await session.get(Ticket, number) if 1 <= number <= MAX_ROW_NUMBER else None
    if ticket is None:
        return f"There is no ticket #{number}.", [_section(f"There is no ticket #{number}.")]
    now = utcnow()
    state = _state(ticket)
    name = escape_mrkdwn(" ".join(ticket.customer_display_name.split()))
    customer = f"{name} ({_customer(ticket)})" if name else _customer(ticket)
    activity = ticket.last_customer_activity_at or ticket.posted_at
    summary = "\n".join(
        [
            f"{_ref(ticket)} · {state} · {ticket.priority} priority",
            f"Customer: {customer}",
            f"Assignee: <@{ticket.assignee_slack_id}>" if ticket.assignee_slack_id else "Assignee: unclaimed",
            _sla(ticket, now, await sla.current_clock(session, number)),
            f"First response: {_first_response(ticket, now)}",
            f"Last customer activity: {_date(activity)}",
            f"Internal notes: {await queries_desk.count_notes(session, ticket_id=number)}",
        ]
    )
    replies = await queries_desk.ticket_replies(session, ticket_id=number)
    listed = "\n".join(_reply_line(r) for r in replies[-REPLIES_SHOWN:]) or "none yet"
    earlier = f" (latest {REPLIES_SHOWN} of {len(replies)})" if len(replies) > REPLIES_SHOWN else ""
    blocks = [_section(summary), _section(f"*Replies*{earlier}:\n{listed}")]
    return f"Ticket #{number}: {_state(ticket)}", blocks


async def answer_stats(session: AsyncSession) -> tuple[str, list[dict[str, Any]]]:
    now = utcnow()
    stats = await queries_desk.day_stats(session, since=datetime.combine(now.date(), time(), tzinfo=UTC), now=now)
    text = "\n".join(
        [
            "*Today (UTC)*",
            f"Mentions: {stats.mentions} · complaints: {stats.complaints}",
            f"Tickets opened: {stats.opened} · resolved: {stats.resolved}",
            f"First responses: {stats.responded_in_sla} within SLA · {stats.responded_late} late",
            f"Open now: {stats.open_now} · overdue: {stats.open_overdue}",
            await _sla_now(session, now),
        ]
    )
    return (
        f"Today: {stats.opened} opened, {stats.resolved} resolved, {stats.open_overdue} open overdue",
        [_section(text)],
    )


# The stages a ticket on the desk can be at, in the order the stats line gives them.
_DESK_STAGES = (Stage.ON_TRACK, Stage.AT_RISK, Stage.BREACHED, Stage.PAUSED)


async def _sla_now(session: AsyncSession, now: datetime) -> str:
    """How the tickets on the desk (open, or waiting on the customer) stand, by the badge each card shows."""
    clocks = await sla.running_clocks(session, states=sla.ON_DESK)
    shown = await sla.shown_clocks(session, {c.ticket_id for c in clocks})
    counts = dict.fromkeys(_DESK_STAGES, 0)
    for clock in shown.values():
        stage = stage_of(clock, now)
        counts[stage] = counts.get(stage, 0) + 1
    return "SLA now: " + " · ".join(f"{EMOJI[stage]} {counts[stage]} {stage}" for stage in _DESK_STAGES)


def answer_help(command: str) -> tuple[str, list[dict[str, Any]]]:
    text = "\n".join(
        [
            f"*{command}* answers only you:",
            f"`{command} mine`: your open tickets",
            f"`{command} open`: open tickets nobody has claimed, oldest first",
            f"`{command} show 42`: ticket #42 in detail, with its replies",
            f"`{command} stats`: today's counts and the SLA state",
        ]
    )
    return f"Usage: {command} mine | open | show N | stats", [_section(text)]


async def answer(ctx: AppContext, *, command: str, text: str, user: str) -> tuple[str, list[dict[str, Any]]]:
    """The reply to one use of the command: (fallback text, blocks)."""
    words = text.split()
    verb = words[0].lower() if words else ""
    show = re.fullmatch(r"#?(\d{1,18})", words[1]) if verb == "show" and len(words) == 2 else None
    async with ctx.sessions() as session:
        if verb == "mine" and len(words) == 1:
            return await answer_mine(session, user)
        if verb == "open" and len(words) == 1:
            return await answer_open(session)
        if show is not None:
            return await answer_show(session, int(show.group(1)))
        if verb == "stats" and len(words) == 1:
            return await answer_stats(session)
    return answer_help(command)


async def is_our_command(body: dict[str, Any], context: dict[str, Any]) -> bool:
    """Only the command named in the settings (global middleware has put them in the context by now)."""
    desk: AppContext = context["desk"]
    return body.get("command") == desk.settings.slack.slash_command


async def on_command(ack: Any, body: dict[str, Any], context: dict[str, Any]) -> None:
    """Answer in the ack: Slack shows a slash command's response payload only to the user who typed it."""
    ctx: AppContext = context["desk"]
    command, user = str(body["command"]), str(body["user_id"])
    try:
        text, blocks = await answer(ctx, command=command, text=str(body.get("text") or ""), user=user)
    except (SQLAlchemyError, OSError) as exc:
        # Still ack: otherwise Slack shows the agent a bare "dispatch_failed" and nobody knows why.
        logger.error("%s %r by %s failed: %s", command, body.get("text"), user, exc)
        await ack(
            text="The desk's database is not answering right now; try again in a minute.", response_type="ephemeral"
        )
        return
    logger.info("%s %r by %s", command, body.get("text"), user)
    await ack(text=text, blocks=blocks, response_type="ephemeral")


def register(app: AsyncApp) -> None:
    app.command(re.compile(r"^/"), matchers=[is_our_command])(on_command)
