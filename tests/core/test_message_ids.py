"""Message-Ids made for a batch of mails (one random draw per batch) are as unique and as
well-formed as those made one by one."""
from postroom.core import chatter
from postroom.core.models import Record


def test_message_ids_of_one_batch_and_of_two_batches_never_repeat_and_name_the_record(make_host):
    host = make_host(plugins=[])
    with host.transaction():
        record = Record.create(model="res.partner", name="Shop", created_at=host.clock.now())
    first, second = chatter.message_id_maker(host, record), chatter.message_id_maker(host, record)
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    domain = host.config.primary_domain
    for mid in ids[:3] + ids[-3:]:
        assert mid.startswith("<") and mid.endswith(f"-postroom-{record.id}-res.partner@{domain}>")
    # Without a record, like make_message_id: the domain alone.
    assert chatter.message_id_maker(host)().endswith(f"@{domain}>")
    assert "-postroom-" not in chatter.message_id_maker(host)()
