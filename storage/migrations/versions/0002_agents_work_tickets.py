"""agents work tickets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:53:57.657406
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('author_slack_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('slack_channel', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('slack_ts', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_by', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slack_channel', 'slack_ts', name='uq_notes_slack_message')
    )
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notes_ticket_id'), ['ticket_id'], unique=False)

    op.create_table('replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('author_slack_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('approver_slack_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('visibility', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('in_reply_to_status_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('mastodon_status_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('mastodon_url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('approval_channel', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('approval_ts', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replies_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_replies_ticket_id'), ['ticket_id'], unique=False)

    op.create_table('ticket_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ticket_events_ticket_id'), ['ticket_id'], unique=False)

    with op.batch_alter_table('mentions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('edited_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                      server_default='complaint'))
        batch_op.add_column(sa.Column('assignee_slack_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('last_customer_activity_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('previous_ticket_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_tickets_previous_ticket_id', 'tickets', ['previous_ticket_id'], ['id'])
        batch_op.create_index('ix_tickets_slack_message', ['channel', 'slack_ts'], unique=False)
    # Tickets opened before this revision: their last customer activity is their first post.
    op.execute("UPDATE tickets SET last_customer_activity_at = posted_at WHERE last_customer_activity_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_slack_message')
        batch_op.drop_constraint('fk_tickets_previous_ticket_id', type_='foreignkey')
        batch_op.drop_column('previous_ticket_id')
        batch_op.drop_column('last_customer_activity_at')
        batch_op.drop_column('closed_reason')
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('first_response_at')
        batch_op.drop_column('assignee_slack_id')
        batch_op.drop_column('label')

    with op.batch_alter_table('mentions', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('edited_at')

    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ticket_events_ticket_id'))

    op.drop_table('ticket_events')
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replies_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_replies_state'))

    op.drop_table('replies')
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notes_ticket_id'))

    op.drop_table('notes')
