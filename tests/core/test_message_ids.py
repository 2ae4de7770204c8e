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
    randoms = [mid[1:].split(".", 1)[1][:16] for mid in ids]
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in randoms)
    assert len(set(randoms)) == len(randoms)
    # The same form as make_message_id's: <microseconds.random@domain>.
    one = chatter.make_message_id(host)
    assert one.endswith(f"@{host.config.primary_domain}>")
    assert [len(part) for part in one[1:].split("@", 1)[0].split(".")] == [16, 16]
    assert ids[0].split(".", 1)[0] == ids[-1].split(".", 1)[0]  # one timestamp for the batch


def test_message_ids_made_later_sort_after_those_made_before(make_host, clock):
    # So that a new id goes in at the end of an index on Message-Ids (a few pages touched
    # per batch), not on a random page of it (a batch's inserts grew with the table).
    host = make_host(plugins=[])
    made = []
    for _ in range(3):
        new_id = chatter.message_id_maker(host)
        batch = [new_id() for _ in range(300)]  # more than one draw of random bits
        made.append((min(batch), max(batch)))
        clock.advance(microseconds=1)
        made.append((chatter.make_message_id(host),) * 2)
        clock.advance(microseconds=1)
    for (_, last), (first, _) in zip(made, made[1:]):
        assert last < first, (last, first)
