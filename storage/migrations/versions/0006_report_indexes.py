"""report indexes: the reads behind the managers' figures, at a million tickets

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 02:12:00.000000

Why each index (storage/reports.py holds the queries; bench/reports.py times them over 1,000,000 seeded tickets
and writes their plans on SQLite and Postgres to bench/RESULTS-reports.md). Without these, every period's counts
read the whole tickets table several times over and the breaches read every clock: the weekly report took 9 to
13 s on SQLite and 6 to 8 s on Postgres at that size on a shared 2-core machine, against a target of 2 s.

- tickets.created_at, first_response_at, resolved_at: tickets opened, answered and resolved in a period (and the
  same per agent, channel and priority) become range searches on one index each; a week is about 2% of a year.
- tickets (id, channel, priority, assignee_slack_id): the per-channel, per-priority and per-agent figures join
  the period's clocks (about 16,000 first responses in a week) to their tickets for these keys. With only the
  primary key, Postgres prices 16,000 probes of the table above one parallel scan of all 1,000,000 tickets and
  takes the scan (about 250 ms a statement, eight such statements per weekly report); with the keys in an
  index it probes that index alone (index-only, about 45 ms). SQLite finds a ticket by its rowid anyway and
  needs none of this, but one schema serves both.
- sla_clocks (achieved_at, kind, business_s, wall_s, breached, ticket_id): the clocks stopped in a period, with
  everything the percentiles, within-SLA shares and per-group joins read, so those reads never touch the table
  (a covering index; SQLite has no INCLUDE, so the columns are key columns on both backends). achieved_at leads
  because most reads want every kind at once. Its prefix also serves what ix_sla_clocks_achieved_at does (the
  running clocks, achieved_at IS NULL); that one is left for the timers and could be dropped later.
- sla_clocks.breached_at: the breaches of a period, newest first (LIMIT 50 read backwards from the index), and
  the breach counts (OR'ed with the stopped clocks: both sides indexed, so both backends combine two index
  searches instead of scanning every clock).

The cost: six more indexes to keep up on writes, where each ticket row is updated a handful of times in its
life and each clock two or three times (not measured separately; bench/ingest.py would show it).
"""
from collections.abc import Sequence

from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_tickets_first_response_at', ['first_response_at'], unique=False)
        batch_op.create_index('ix_tickets_resolved_at', ['resolved_at'], unique=False)
        batch_op.create_index(
            'ix_tickets_report_groups', ['id', 'channel', 'priority', 'assignee_slack_id'], unique=False
        )

    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.create_index(
            'ix_sla_clocks_report',
            ['achieved_at', 'kind', 'business_s', 'wall_s', 'breached', 'ticket_id'],
            unique=False,
        )
        batch_op.create_index('ix_sla_clocks_breached_at', ['breached_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.drop_index('ix_sla_clocks_breached_at')
        batch_op.drop_index('ix_sla_clocks_report')

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_report_groups')
        batch_op.drop_index('ix_tickets_resolved_at')
        batch_op.drop_index('ix_tickets_first_response_at')
        batch_op.drop_index('ix_tickets_created_at')
