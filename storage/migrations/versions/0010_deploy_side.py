"""deploy side: authorized runs, deploy decisions, protection-rule reviews, out-of-band reports

Revision ID: 0010_deploy_side
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.models

revision = "0010_deploy_side"
down_revision = "0001"
branch_labels = None
depends_on = None

STR = sqlmodel.sql.sqltypes.AutoString
TS = storage.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "authorizedrun",
        sa.Column("promotion_id", STR(), nullable=False),
        sa.Column("repository", STR(), nullable=False),
        sa.Column("run_id", STR(), nullable=False),
        sa.Column("run_attempt", sa.Integer(), nullable=False),
        sa.Column("environment", STR(), nullable=False),
        sa.Column("digest", STR(), nullable=False),
        sa.Column("source", STR(), nullable=False),
        sa.Column("authorized_at", TS(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("promotion_id"),
    )
    op.create_table(
        "deploydecision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", STR(), nullable=False),
        sa.Column("repository", STR(), nullable=False),
        sa.Column("run_id", STR(), nullable=False),
        sa.Column("run_attempt", sa.Integer(), nullable=True),
        sa.Column("run_actor", STR(), nullable=True),
        sa.Column("service", STR(), nullable=True),
        sa.Column("environment", STR(), nullable=False),
        sa.Column("digest", STR(), nullable=True),
        sa.Column("promotion_id", STR(), nullable=True),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reason", STR(), nullable=False),
        sa.Column("message", STR(), nullable=False),
        sa.Column("decided_at", TS(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("deploydecision", schema=None) as batch_op:
        batch_op.create_index("ix_deploydecision_run", ["repository", "run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deploydecision_promotion_id"), ["promotion_id"], unique=False)
    op.create_table(
        "protectionrulereview",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository", STR(), nullable=False),
        sa.Column("run_id", STR(), nullable=False),
        sa.Column("environment", STR(), nullable=False),
        sa.Column("delivery_id", STR(), nullable=True),
        sa.Column("state", STR(), nullable=True),
        sa.Column("comment", STR(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", STR(), nullable=True),
        sa.Column("requested_at", TS(timezone=True), nullable=False),
        sa.Column("answered_at", TS(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("protectionrulereview", schema=None) as batch_op:
        batch_op.create_index("ix_protectionrulereview_open", ["answered_at", "requested_at"], unique=False)
    op.create_table(
        "outofbandreport",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", STR(), nullable=True),
        sa.Column("kind", STR(), nullable=False),
        sa.Column("service", STR(), nullable=False),
        sa.Column("tag", STR(), nullable=False),
        sa.Column("environment", STR(), nullable=False),
        sa.Column("outcome", STR(), nullable=False),
        sa.Column("run_id", STR(), nullable=True),
        sa.Column("url", STR(), nullable=True),
        sa.Column("promotion_id", STR(), nullable=True),
        sa.Column("reason", STR(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reported_by", STR(), nullable=False),
        sa.Column("finished_at", TS(timezone=True), nullable=False),
        sa.Column("reported_at", TS(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("outofbandreport", schema=None) as batch_op:
        batch_op.create_index("ix_outofbandreport_lookup", ["service", "environment", "reported_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outofbandreport", schema=None) as batch_op:
        batch_op.drop_index("ix_outofbandreport_lookup")
    op.drop_table("outofbandreport")
    with op.batch_alter_table("protectionrulereview", schema=None) as batch_op:
        batch_op.drop_index("ix_protectionrulereview_open")
    op.drop_table("protectionrulereview")
    with op.batch_alter_table("deploydecision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deploydecision_promotion_id"))
        batch_op.drop_index("ix_deploydecision_run")
    op.drop_table("deploydecision")
    op.drop_table("authorizedrun")
