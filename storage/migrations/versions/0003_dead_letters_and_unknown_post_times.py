"""dead letters and unknown post times

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:53:17.476170
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('feed', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('item_key', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('status_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('status_uri', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('feed', 'item_key', name='uq_dead_letters_feed_item')
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_last_seen_at'), ['last_seen_at'], unique=False)

    with op.batch_alter_table('mentions', schema=None) as batch_op:
        # Posts stored before this always had their own time.
        batch_op.add_column(sa.Column('posted_at_known', sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('mentions', schema=None) as batch_op:
        batch_op.drop_column('posted_at_known')

    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_last_seen_at'))

    op.drop_table('dead_letters')
