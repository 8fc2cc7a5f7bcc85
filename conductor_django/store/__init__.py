"""The store: every raw SQL statement of conductor_django, and the only vendor branches.

``vendor`` (the dialects: SQLite, PostgreSQL, MySQL), ``claims`` (the claim: one
module per database, and the PL/pgSQL of PostgreSQL's in ``sql/``), ``writes``
(fenced raw writes of held executions), ``inserts`` (the invoke hot path),
``prepared`` (PostgreSQL prepared statements), ``transactions`` (SQLite's single
writer), ``stats`` (the admin's reads). The functions take a connection and table
names and return plain rows: nothing here imports the models.
"""
