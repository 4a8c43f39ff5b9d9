"""the promotion model's rules: expedited promotions, and a rollback that ends a deploy's wait

Revision ID: 0011_model_rules
Revises: 0010_deploy_side
Create Date: 2026-12-01 12:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011_model_rules'
down_revision = '0010_deploy_side'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('promotion', schema=None) as batch_op:
        # an expedited promotion (a critical security patch) and why; counted apart in metrics
        batch_op.add_column(sa.Column('expedited', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('expedite_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        # a rollback requested while this deploy still awaits its verification: its approval ends that wait
        batch_op.add_column(sa.Column('preempts', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('promotion', schema=None) as batch_op:
        batch_op.drop_column('preempts')
        batch_op.drop_column('expedite_reason')
        batch_op.drop_column('expedited')
