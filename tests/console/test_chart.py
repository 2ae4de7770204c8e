"""The queue's 24-hour chart counts each hour's sent, failed and waiting mails, on each engine."""
import datetime as dt

from postroom.plugins.mail_queue.console import hourly_chart
from postroom.plugins.mail_queue.models import OutgoingMail


def test_the_chart_counts_mails_per_hour_and_leaves_out_older_ones(make_host, db_url, clock):
    host = make_host(plugins=["mail_queue"], db_url=db_url)
    now = clock.now()  # 09:00

    def mail(state, hours_ago, n=1):
        at = now - dt.timedelta(hours=hours_ago, minutes=10)
        with host.transaction():
            for _ in range(n):
                OutgoingMail.create(message_id=f"<{state}{hours_ago}{_}@x>", state=state, created_at=at,
                                    updated_at=at, sent_at=at if state == "sent" else None)
    mail("sent", 1, 3)
    mail("exception", 1)
    mail("outgoing", 5, 2)
    mail("sent", 30, 4)  # older than the chart's 24 hours
    chart = hourly_chart(host)
    assert len(chart) == 24 and chart[-1]["hour"].hour == 9
    by_hour = {c["hour"].hour: (c["sent"], c["failed"], c["waiting"]) for c in chart}
    assert by_hour[7] == (3, 1, 0)
    assert by_hour[3] == (0, 0, 2)
    assert sum(c["sent"] for c in chart) == 3
