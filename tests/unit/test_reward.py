"""The default reward: EM on the last <answer>, fixed keys, search count reported."""

import pytest

from sage_rl.reward import compute_score, gold_answers

KEYS = {"score", "acc", "format_ok", "num_searches"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>x</think><answer>Tulsa</answer>", 1.0),
        ("<answer>Paris</answer> ... <answer> the tulsa </answer>", 1.0),  # the last answer counts
        ("<answer>Tulsa</answer><answer>Paris</answer>", 0.0),
        ("Tulsa", 0.0),  # no tags: no credit
    ],
)
def test_exact_match_on_last_answer(response, expected):
    result = compute_score("hotpotqa", response, {"target": ["Tulsa", "Tulsa, Oklahoma"]})
    assert set(result) == KEYS
    assert result["score"] == expected


def test_format_and_search_count_are_reported():
    result = compute_score("hotpotqa", "no answer", ["x"], extra_info={"num_searches": 3})
    assert result["format_ok"] == 0.0 and result["num_searches"] == 3.0


def test_ground_truth_shapes():
    assert gold_answers({"target": ["a", "b"]}) == ["a", "b"]
    assert gold_answers("a") == ["a"]
    with pytest.raises(ValueError):
        gold_answers({"other": 1})


def test_judge_reward_asks_an_openai_compatible_judge():
    import asyncio

    from aiohttp import web

    from sage_rl.reward import judge_score

    seen = []

    async def handle(request):
        body = await request.json()
        seen.append(body)
        prompt = body["messages"][0]["content"]
        verdict = "yes" if "Response: Tulsa" in prompt else "no"
        return web.json_response({"choices": [{"message": {"content": f"reasoning: ...\ncorrect: {verdict}"}}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 4}})

    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        kwargs = {"judge_url": url, "judge_model": "judge"}
        try:
            info = {"question": "Where did the band first perform?", "num_searches": 2}
            right = await judge_score("hotpotqa", "<answer>Tulsa</answer>", {"target": ["Tulsa"]}, info, **kwargs)
            wrong = await judge_score("hotpotqa", "<answer>Paris</answer>", {"target": ["Tulsa"]}, info, **kwargs)
            silent = await judge_score("hotpotqa", "no answer", {"target": ["Tulsa"]}, info, **kwargs)
        finally:
            await runner.cleanup()
        return right, wrong, silent

    right, wrong, silent = asyncio.run(main())
    assert right == {"score": 1.0, "acc": 1.0, "format_ok": 1.0, "num_searches": 2.0, "judge_garbled": 0.0}
    assert wrong["score"] == 0.0 and wrong["format_ok"] == 1.0
    assert silent["score"] == 0.0 and silent["format_ok"] == 0.0
    assert len(seen) == 2  # no answer, no judge call
    assert "Where did the band first perform?" in seen[0]["messages"][0]["content"]
    assert seen[0]["model"] == "judge" and seen[0]["temperature"] == 0.0
