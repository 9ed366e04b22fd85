"""databot's examples/mysql2.py on rxbot: Query rows into a class, print them on a Fork
and copy them into another table with a batched Insert.

Uses the local MariaDB (127.0.0.1:3306, user root, empty password, database ``test``;
override with RXBOT_MYSQL_HOST/PORT/USER/PASSWORD/DB) and creates and drops its own
tables. ``python examples/mysql2.py --sqlite`` runs it on a temporary SQLite file.

``Insert`` binds ``"{user}"``/``"{host}"`` from each item (a ``User`` here: attributes
work like dict keys), writes 500 rows per ``executemany`` and commits each batch.
"""
import os
import sys
import tempfile

from rxbot.botframe import BotFrame
from rxbot.tree.flow import Fork, Loop, Pipe

if "--sqlite" in sys.argv:
    from rxbot.db.sqlite import Insert, Query

    dbconf = {"path": os.path.join(tempfile.mkdtemp(prefix="rxbot-example-"), "example.db")}
else:
    from rxbot.db.mysql import Insert, Query

    dbconf = {
        "host": os.environ.get("RXBOT_MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("RXBOT_MYSQL_PORT", "3306")),
        "user": os.environ.get("RXBOT_MYSQL_USER", "root"),
        "password": os.environ.get("RXBOT_MYSQL_PASSWORD", ""),
        "db": os.environ.get("RXBOT_MYSQL_DB", "test"),
    }

SOURCE = f"rxbot_example_src_{os.getpid()}"
TARGET = f"rxbot_example_new_{os.getpid()}"


class User(object):
    def __init__(self):
        self.name = None
        self.host = None
        self.user = None

    def __repr__(self):
        return "class user %s,%s,%s" % (self.name, self.host, self.user)


def setup():
    Pipe(Query(f"create table {SOURCE} (name varchar(32) primary key, host varchar(64), user varchar(32))",
               **dbconf))
    Pipe(Query(f"create table {TARGET} (user varchar(32), host varchar(64))", **dbconf))
    BotFrame.run()
    rows = [(f"user{i:02d}", f"10.0.0.{i}", "root" if i % 3 == 0 else "app") for i in range(12)]
    Pipe(Loop(rows), Insert(f"insert into {SOURCE} (name, host, user) values (%s, %s, %s)", **dbconf))
    BotFrame.run()


def main():
    print("ex1----")
    Pipe(
        Loop(range(1)),
        Query(f"select * from {SOURCE} order by name limit 10", **dbconf, map_class=User),
        Fork(print),
        Insert(f'insert into {TARGET}(user,host)values ("{{user}}","{{host}}")', **dbconf),
    )
    BotFrame.run()

    Pipe(Query(f"select count(*) as n, sum(user = 'root') as roots from {TARGET}", **dbconf),
         lambda r: print(f"copied {r['n']} rows, {int(r['roots'])} of them root"))
    BotFrame.run()


if __name__ == "__main__":
    setup()
    try:
        main()
    finally:
        Pipe(Query(f"drop table if exists {SOURCE}", **dbconf))
        Pipe(Query(f"drop table if exists {TARGET}", **dbconf))
        BotFrame.run()
