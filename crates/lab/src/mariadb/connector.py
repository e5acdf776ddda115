"""A MySQL client on MySQL's own Python driver (mysql-connector-python, pure Python): prepared
statements in the binary protocol (COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE) and
COM_CHANGE_USER, driven by tab-separated lines on its standard input; "ok" on its standard
output after each, "ready" once logged in.

  prepare NAME SQL | execute NAME ARG... | close NAME | change_user USER PASSWORD
"""
import sys

import mysql.connector

host, port, user, password, database = sys.argv[1:6]
cnx = mysql.connector.connect(
    host=host,
    port=int(port),
    user=user,
    password=password,
    database=database,
    use_pure=True,
    ssl_disabled=True,
    autocommit=True,
)
statements = {}
print("ready", flush=True)
for line in sys.stdin:
    command, *args = line.rstrip("\n").split("\t")
    if command == "prepare":
        name, sql = args
        statements[name] = cnx.cmd_stmt_prepare(sql.encode())
    elif command == "execute":
        name, *values = args
        stmt = statements[name]
        data = tuple(int(v) if v.lstrip("-").isdigit() else v for v in values)
        cnx.cmd_stmt_execute(stmt["statement_id"], data, stmt["parameters"])
    elif command == "close":
        cnx.cmd_stmt_close(statements.pop(args[0])["statement_id"])
    elif command == "change_user":
        new_user, new_password = args
        cnx.cmd_change_user(username=new_user, password=new_password, database=database)
        # The server forgot the connection's statements.
        statements.clear()
    else:
        raise SystemExit(f"unknown command {command}")
    print("ok", flush=True)
cnx.close()
