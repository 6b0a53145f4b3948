"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('acl_policies',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('acl_tokens',
    sa.Column('accessor_id', sa.String(length=36), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('accessor_id'),
    sa.UniqueConstraint('secret_hash')
    )
    op.create_table('changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('index', sa.BigInteger(), nullable=False),
    sa.Column('table', sa.String(length=32), nullable=False),
    sa.Column('key', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.create_index('ix_changes_index', ['index'], unique=False)

    op.create_table('checks',
    sa.Column('node', sa.String(length=256), nullable=False),
    sa.Column('check_id', sa.String(length=256), nullable=False),
    sa.Column('service_id', sa.String(length=256), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('node', 'check_id')
    )
    op.create_table('config_entries',
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('partition', sa.String(length=128), nullable=False),
    sa.Column('namespace', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'partition', 'namespace', 'name')
    )
    op.create_table('index_counter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('nodes',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('services',
    sa.Column('node', sa.String(length=256), nullable=False),
    sa.Column('service_id', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('create_index', sa.BigInteger(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('node', 'service_id')
    )
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.create_index('ix_services_name', ['name'], unique=False)

    op.create_table('system',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('modify_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('system')
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_index('ix_services_name')

    op.drop_table('services')
    op.drop_table('nodes')
    op.drop_table('index_counter')
    op.drop_table('config_entries')
    op.drop_table('checks')
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.drop_index('ix_changes_index')

    op.drop_table('changes')
    op.drop_table('acl_tokens')
    op.drop_table('acl_policies')
