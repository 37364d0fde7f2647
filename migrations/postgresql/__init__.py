"""PostgreSQL's migrations: the same numbers and names as the SQLite files one folder up, in
PostgreSQL's types (64-bit ids, identity columns). Package data, found like those."""
