"""The gateway's tables: one module per area, each a set of typed functions that take a connection.

Routes and event handlers own the transaction (`pool.connection()` or `unit_of_work`) and the HTTP
or event concerns; the SQL lives here, like the other services' `repo.py`.
"""
