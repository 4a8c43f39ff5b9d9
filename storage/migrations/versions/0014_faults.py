"""outbox sends and their time; keyed audit events; digest runs marked posted

Revision ID: 0014_faults
Revises: 0011_model_rules
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0014_faults"
down_revision = "0011_model_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outboxentry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sending_at", storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sends", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("jobclaim", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_at", storage.models.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keyed", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.drop_column("keyed")
    with op.batch_alter_table("jobclaim", schema=None) as batch_op:
        batch_op.drop_column("completed_at")
    with op.batch_alter_table("outboxentry", schema=None) as batch_op:
        batch_op.drop_column("sends")
        batch_op.drop_column("sending_at")
