"""The stores of Responses API answers on their own: SQLite in data_dir (what the workers of one
instance share) and Redis (what every instance shares), with the same four calls: save, load,
item, delete; owners, expiry."""

import pytest

from gateway.responses import store as store_module
from gateway.responses.store import RedisResponses, SQLiteResponses, Stored, owner_of


def _stored(response_id="resp_1", output_id="msg_1"):
    return Stored({"id": response_id, "output": [{"id": output_id, "type": "message", "role": "assistant", "content": []}]},
                  [{"type": "message", "role": "user", "content": "hi", "id": "msg_in"}])


def test_stores_on_one_database_see_each_others_responses(tmp_path):
    """What two workers of one instance do: each has its own connection to the same file."""
    one, two = SQLiteResponses(str(tmp_path), 3600), SQLiteResponses(str(tmp_path), 3600)
    one.save(_stored(), "owner-a", [{"id": "msg_in", "type": "message", "role": "user", "content": "hi"}])
    assert two.load("resp_1", "owner-a").context[0]["content"] == "hi"
    assert two.item("msg_1", "owner-a")["type"] == "message" and two.item("msg_in", "owner-a")["content"] == "hi"
    assert two.load("resp_1", "owner-b") is None and two.item("msg_1", "owner-b") is None
    assert two.delete("resp_1", "owner-a") and one.load("resp_1", "owner-a") is None
    assert one.item("msg_1", "owner-a") is None  # its items went with it


def test_stored_responses_expire(tmp_path, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(store_module, "_now", lambda: now[0])
    store = SQLiteResponses(str(tmp_path), 60)
    store.save(_stored(), "owner-a", [])
    now[0] += 59
    assert store.load("resp_1", "owner-a") is not None and store.item("msg_1", "owner-a") is not None
    now[0] += 2
    assert store.load("resp_1", "owner-a") is None and store.item("msg_1", "owner-a") is None
    assert not store.delete("resp_1", "owner-a")
    now[0] += 60  # a later save purges what expired
    store.save(_stored("resp_2", "msg_2"), "owner-a", [])
    rows = store._run(lambda: store._db().execute("SELECT id FROM responses").fetchall())
    assert rows == [("resp_2",)]


def test_a_broken_database_is_unavailable_and_comes_back(tmp_path):
    from gateway.errors import ResponseStoreUnavailable

    blocker = tmp_path / "data"
    blocker.write_text("a file where the directory should be")
    store = SQLiteResponses(str(blocker), 3600)
    store.save(_stored(), "owner-a", [])  # an answer is never failed for its storing
    with pytest.raises(ResponseStoreUnavailable):
        store.load("resp_1", "owner-a")
    blocker.unlink()  # the operator fixes it: no restart needed
    store.save(_stored(), "owner-a", [])
    assert store.load("resp_1", "owner-a") is not None


# --- owners -------------------------------------------------------------------------------------


def test_the_owner_is_the_key_and_the_user_hashed_together():
    kim = {"user.id": "kim"}
    mine = owner_of(kim, "Bearer sk-key-one", "10.0.0.1")
    assert mine == owner_of(kim, "Bearer sk-key-one", "10.0.0.2")  # the same key and user, wherever from
    assert mine != owner_of(kim, "Bearer sk-key-two", "10.0.0.1")  # another key
    assert mine != owner_of({"user.id": "lee"}, "Bearer sk-key-one", "10.0.0.1")  # another user
    assert mine != owner_of({}, "Bearer sk-key-one", "10.0.0.1")  # no user: the key alone
    assert owner_of({}, None, "10.0.0.1") != owner_of({}, None, "10.0.0.2")  # no key, no user: the address, as [limits] counts
    assert "sk-key-one" not in mine and "kim" not in mine


# --- Redis ----------------------------------------------------------------------------------------


@pytest.fixture
def redis_store(tmp_path):
    from gateway.limits.store import RedisStore
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    client = RedisStore(server.url, "open")
    yield server, client
    client.close()
    server.stop()


def test_redis_keeps_responses_for_their_owner_with_their_expiry(redis_store):
    server, client = redis_store
    store = RedisResponses(client, 3600)
    store.save(_stored(), "owner-a", [{"id": "msg_in", "type": "message", "role": "user", "content": "hi"}])
    assert store.load("resp_1", "owner-a").context[0]["content"] == "hi"
    assert store.item("msg_1", "owner-a")["type"] == "message" and store.item("msg_in", "owner-a")["content"] == "hi"
    assert store.load("resp_1", "owner-b") is None and store.item("msg_1", "owner-b") is None and not store.delete("resp_1", "owner-b")
    with server.client() as redis:
        keys = redis.keys("llm-gateway:response*")
        assert len(keys) == 3 and all(3_500_000 < redis.pttl(key) <= 3_600_000 for key in keys)


def test_redis_lets_them_expire(redis_store):
    from tests.backends import wait_until

    _, client = redis_store
    store = RedisResponses(client, 0.2)
    store.save(_stored(), "owner-a", [])
    wait_until(lambda: store.load("resp_1", "owner-a") is None and store.item("msg_1", "owner-a") is None, timeout=5, message="expiry")


def test_redis_delete_takes_the_items_with_it(redis_store):
    _, client = redis_store
    store = RedisResponses(client, 3600)
    store.save(_stored(), "owner-a", [])
    assert store.delete("resp_1", "owner-a")
    assert store.load("resp_1", "owner-a") is None and store.item("msg_1", "owner-a") is None


def test_redis_unreachable_is_a_503_for_lookups_not_a_failed_answer(redis_store):
    from gateway.errors import ResponseStoreUnavailable

    server, client = redis_store
    store = RedisResponses(client, 3600)
    server.kill()
    store.save(_stored(), "owner-a", [])  # logged, not raised: the answer still goes out
    with pytest.raises(ResponseStoreUnavailable):
        store.load("resp_1", "owner-a")
