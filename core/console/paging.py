"""Pages of a query: LIMIT/OFFSET with one row more to know whether a next page exists."""
import dataclasses

PAGE_SIZE = 50
MAX_PAGE = 10_000
# Totals are counted up to this, then shown as "more than": counting a million-row queue
# exactly on every page view would cost more than the page itself, and past a thousand the
# exact figure helps nobody page through (at 10,000 the count was a fifth of a PostgreSQL
# queue page: its heap rows are read one by one until autovacuum marks them all-visible).
COUNT_CAP = 1_000


@dataclasses.dataclass
class Page:
    rows: list
    number: int
    size: int
    has_next: bool
    total: int | None = None
    capped: bool = False  # the total is at least `total`

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, -(-self.total // self.size))


def page_number(request) -> int:
    """The `page` query parameter, bounded; anything else is page 1."""
    raw = request.query_params.get("page", "1")
    return min(int(raw), MAX_PAGE) if raw.isdigit() and int(raw) >= 1 else 1


def capped_count(query) -> tuple[int, bool]:
    """(rows of `query` counted up to COUNT_CAP, whether there are more)."""
    total = query.order_by().limit(COUNT_CAP + 1).count()
    return min(total, COUNT_CAP), total > COUNT_CAP


def paginate(query, number: int, size: int = PAGE_SIZE, count: bool = True) -> Page:
    """One page of a peewee query (already ordered); `count` adds the total (one COUNT of
    at most COUNT_CAP + 1 rows)."""
    rows = list(query.limit(size + 1).offset((number - 1) * size))
    total, capped = capped_count(query) if count else (None, False)
    return Page(rows[:size], number, size, len(rows) > size, total, capped)
