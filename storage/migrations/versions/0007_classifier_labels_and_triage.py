"""classifier labels, triage, categories and priority reasons (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 06:15:26.523771

- classifier_labels: every agent decision about a post ("Not a complaint", "Open ticket" in triage, a reaction) is a
  training label for `mentiondesk classifier train`, with who and when. It holds no text of its own: training reads
  the mention's, so erasure has one place to erase.
- tickets.categories / priority_reasons: the keyword categories and the cues behind the priority, shown on the card.
- tickets.triage_*: why a post went to triage and where its triage message is, kept once it is opened or dismissed so
  the message can say who decided. A ticket in triage has state 'triage' (a new value, no schema change).
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('classifier_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mention_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('agent_slack_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['mention_id'], ['mentions.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('classifier_labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_classifier_labels_mention_id'), ['mention_id'], unique=False)

    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('categories', sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column('priority_reasons', sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column('triage_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('triage_channel', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column('triage_ts', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('triage_ts')
        batch_op.drop_column('triage_channel')
        batch_op.drop_column('triage_reason')
        batch_op.drop_column('priority_reasons')
        batch_op.drop_column('categories')

    with op.batch_alter_table('classifier_labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_classifier_labels_mention_id'))

    op.drop_table('classifier_labels')
