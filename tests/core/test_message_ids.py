"""Message-Ids made for a batch of mails (randomness drawn in bulk) are as unique, as
unguessable and as well-formed as those made one by one."""
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


def test_a_batch_message_id_tells_nothing_of_its_neighbours(make_host):
    # A recipient sees their own Message-Id; a reply or bounce naming a neighbour's must not
    # be forgeable from it: every id of a batch has its own 64 random bits.
    host = make_host(plugins=[])
    new_id = chatter.message_id_maker(host)
    ids = [new_id() for _ in range(600)]  # past one bulk draw of 256
    randoms = [mid[1:].split(".", 1)[0] for mid in ids]
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in randoms)
    assert len(set(randoms)) == len(randoms)
    # The same form as make_message_id's: <random.microseconds@domain>.
    assert [len(part) for part in chatter.make_message_id(host)[1:].split(".", 1)[0:1]] == [16]
    assert ids[0].split(".", 1)[1] == ids[-1].split(".", 1)[1]  # one timestamp for the batch
