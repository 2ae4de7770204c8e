from .conftest import contacts, drain, make_campaign, make_list, show


def test_a_sent_campaign_reaches_every_contact_once(mk, run, sink, tmp_path):
    host = mk()
    make_list(run, host, tmp_path, "news", contacts(3))
    cid = make_campaign(run, host, tmp_path, "news")
    run(host, "campaign", "send", cid)
    drain(host)
    got = sink.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in got) == [f"user{i}@example.org" for i in range(3)]
    data = show(run, host, cid)
    assert data["state"] == "done" and data["sent"] == 3 and data["expected"] == 3
