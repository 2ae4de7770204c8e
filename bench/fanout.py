"""Fan-out benchmark: post on records with 10 … 10,000 followers.

Prints one JSON line: for each size, seconds per post and SQL statements per post. The
statement count must not grow with the follower count (posting is set-based).

    python bench/fanout.py [--db URL] [--posts N]
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from postroom.core import chatter, records  # noqa: E402
from postroom.core.config import Config  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from postroom.core.models import Follower, Partner  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)


def seed(host, size):
    rec = records.create_record(host, "generic", f"record with {size} followers")
    now = host.clock.now()
    with host.transaction():
        first = (Partner.select(Partner.id).order_by(Partner.id.desc()).scalar() or 0) + 1
        rows = [{"name": f"P{size}-{i}", "email": f"p{size}.{i}@example.com",
                 "email_normalized": f"p{size}.{i}@example.com", "created_at": now} for i in range(size)]
        for start in range(0, size, 1000):
            Partner.insert_many(rows[start:start + 1000]).execute()
        ids = [p for (p,) in Partner.select(Partner.id).where(Partner.id >= first).tuples()]
        for start in range(0, len(ids), 1000):
            Follower.insert_many([{"record": rec.id, "partner": p} for p in ids[start:start + 1000]]).execute()
    return rec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--posts", type=int, default=5, help="posts per size")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="postroom-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.db"
    host = Host(Config({"database": url, "log_dir": tmp, "log_level": "WARNING",
                        "domains": "example.com"}, base_dir=tmp)).open()
    result = {"bench": "fanout", "engine": host.db.engine, "posts_per_size": args.posts, "sizes": {}}
    for size in SIZES:
        rec = seed(host, size)
        seconds, statements = [], []
        for i in range(args.posts):
            before = host.statements()
            t0 = time.perf_counter()
            chatter.post_message(host, rec, f"post {i}", subject="hello")
            seconds.append(time.perf_counter() - t0)
            statements.append(host.statements() - before)
        result["sizes"][str(size)] = {"seconds_per_post": round(sum(seconds) / len(seconds), 5),
                                      "statements_per_post": max(statements)}
    counts = {v["statements_per_post"] for v in result["sizes"].values()}
    result["statements_constant"] = len(counts) == 1
    host.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
