"""databot's examples/mysql1.py on rxbot: Query rows into a class, bind the input item
to ``%s``, bind dict keys to ``{name}`` placeholders.

Uses the local MariaDB (127.0.0.1:3306, user root, empty password, database ``test``;
override with RXBOT_MYSQL_HOST/PORT/USER/PASSWORD/DB) and creates and drops its own
table. ``python examples/mysql1.py --sqlite`` runs the same pipes on a temporary SQLite
file: no server needed.

Unlike databot, values are never formatted into the SQL text: ``"{user}"`` and ``%s``
become parameters bound by the driver, so a quote in a value cannot change the query.
"""
import os
import sys
import tempfile

from rxbot.botframe import BotFrame
from rxbot.tree.flow import Loop, Pipe

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

TABLE = f"rxbot_example_user_{os.getpid()}"  # our own table, dropped at the end


class User(object):
    def __init__(self):
        self.name = None
        self.host = None
        self.user = None

    def __repr__(self):
        return "class user %s,%s,%s" % (self.name, self.host, self.user)


def setup():
    Pipe(Query(f"create table {TABLE} (name varchar(32) primary key, host varchar(64), user varchar(32))",
               **dbconf))
    BotFrame.run()
    users = [
        {"name": "alice", "host": "localhost", "user": "root"},
        {"name": "bob", "host": "%", "user": "app"},
        {"name": "carol", "host": "10.0.0.%", "user": "root"},
        {"name": "mallory", "host": "x'); DROP TABLE users; --", "user": "guest"},
    ]
    Pipe(Loop(users), Insert(f'insert into {TABLE} (name, host, user) values ("{{name}}", "{{host}}", "{{user}}")',
                             **dbconf))
    BotFrame.run()


def main():
    print("ex1----")
    Pipe(
        Loop(range(1)),
        Query(f"select * from {TABLE} order by name limit 10", **dbconf, map_class=User),
        print,
    )
    BotFrame.run()

    print("ex2----param bind with input")
    Pipe(
        Loop(range(3)),
        Query("select %s as n", **dbconf),
        print,
    )
    BotFrame.run()

    print("ex3----param bind with dict")
    u = User()
    u.user = "root"
    Pipe(
        Loop([{"user": "guest"}, u.__dict__]),
        Query(f'select name, host from {TABLE} where user="{{user}}" order by name', **dbconf),
        print,
    )
    BotFrame.run()


if __name__ == "__main__":
    setup()
    try:
        main()
    finally:
        Pipe(Query(f"drop table if exists {TABLE}", **dbconf))
        BotFrame.run()
