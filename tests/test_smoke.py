from agent_budget import Budget, BudgetExceededError, BudgetScope, Usage


def test_reserve_commit_refuse(clock):
    b = Budget(BudgetScope(name="s", max_tokens_per_session=100), clock=clock)
    r = b.reserve("gpt-4o", 50, 10)
    try:
        b.reserve("gpt-4o", 30, 20)
    except BudgetExceededError as e:
        assert e.limit_type == "session_tokens"
    else:
        raise AssertionError("not refused")
    r.commit(Usage(40, 5))
    assert b.summary()["session"]["tokens"] == 45
