"""The database schema as numbered SQL migrations: `NNNN_name.sql` files, applied in order by
`bot.store.migrator` and never edited after they land (a change is a new file). They ship as
package data of this package and the bot finds them through `importlib.resources`, in a checkout
and in an installed copy alike. `postgresql/` holds PostgreSQL's version of each, with the same
number and name (`DATABASE_URL`).
"""
