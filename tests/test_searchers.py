"""The search-algorithm contract, held by every registered searcher, and choosing one by config."""

from __future__ import annotations

import json

import pytest

from evosearch.config import ConfigError, from_dict
from evosearch.errors import EvosearchError
from evosearch.layers.seeds import seed_graph
from evosearch.runner.run_config import RunConfig, SearchConfig, load_run_config
from evosearch.runner.run_directory import searcher_state
from evosearch.search import (
    SEARCHERS,
    WORST_SCORE,
    EvolutionSettings,
    Proposal,
    RandomSearch,
    RegularizedEvolution,
    Searcher,
    create_searcher,
)
from evosearch.search.mutation import SearchSpace

SEEDS = [seed_graph(n) for n in ("bn_relu", "gn_relu", "evonorm_s0")]
# Small enough that a short drive reaches the evolution's steady state (tournaments, aging).
SETTINGS = {"population_size": 5, "tournament_size": 3, "seed_mutations": 2, "random_graphs": 2}


@pytest.fixture(params=sorted(SEARCHERS))
def algorithm(request) -> str:
    return request.param


def make(algorithm: str, seed: int = 0) -> Searcher:
    return create_searcher(algorithm, SearchSpace(), SEEDS, num_objectives=2, seed=seed, settings=SETTINGS)


def fake_scores(proposal: Proposal) -> tuple[float, float]:
    """Deterministic scores from the graph's hash (a stand-in for training)."""
    h = int(proposal.graph.structural_hash(), 16)
    return (h % 1000) / 1000, (h // 1000 % 1000) / 1000


def answer(searcher: Searcher, proposal: Proposal) -> None:
    """As the driver does: every fifth candidate rejected, every seventh failed, the rest trained."""
    if proposal.id % 5 == 4:
        searcher.discard(proposal.id)
    elif proposal.id % 7 == 6:
        searcher.observe(proposal.id, None)
    else:
        searcher.observe(proposal.id, fake_scores(proposal))


def drive(searcher: Searcher, steps: int, in_flight: int = 3) -> list[Proposal]:
    """Keep ``in_flight`` proposals out, answer the oldest; the proposals answered, in order."""
    answered = []
    for _ in range(steps):
        while len(searcher.pending) < in_flight:
            searcher.suggest()
        oldest = next(iter(searcher.pending.values()))
        answer(searcher, oldest)
        answered.append(oldest)
    return answered


def signature(proposal: Proposal) -> tuple:
    return proposal.id, proposal.origin, proposal.parent, proposal.graph.structural_hash()


def test_the_registry_names_both_algorithms_and_builds_them_with_the_settings():
    assert {"evolution": RegularizedEvolution, "random": RandomSearch} == SEARCHERS
    evolution = make("evolution")
    assert evolution.settings == EvolutionSettings(**SETTINGS)
    assert isinstance(make("random"), RandomSearch)
    with pytest.raises(EvosearchError, match="unknown search algorithm 'annealing'; algorithms: evolution"):
        create_searcher("annealing", SearchSpace(), SEEDS, num_objectives=1)


def test_suggest_numbers_proposals_and_pending_holds_those_in_flight(algorithm):
    searcher = make(algorithm)
    proposals = [searcher.suggest() for _ in range(8)]
    assert [p.id for p in proposals] == list(range(8))
    assert [p.origin for p in proposals[:3]] == ["seed"] * 3  # the references come first
    searcher.observe(1, (0.5, 0.5))
    searcher.discard(4)
    searcher.observe(6, None)
    assert list(searcher.pending) == [0, 2, 3, 5, 7]
    assert searcher.pending[5] is proposals[5]
    with pytest.raises(TypeError):
        searcher.pending[9] = proposals[0]  # read-only: only suggest, observe and discard change it
    assert searcher.suggest().id == 8  # ids are never reused, whatever was answered


def test_answering_an_id_that_is_not_pending_is_one_error_and_changes_nothing(algorithm):
    searcher = make(algorithm)
    a, b = searcher.suggest(), searcher.suggest()
    searcher.observe(a.id, (0.1, 0.2))
    before = json.dumps(searcher.state_dict())
    for call in (
        lambda: searcher.observe(a.id, (0.3, 0.4)),  # answered twice
        lambda: searcher.discard(a.id),
        lambda: searcher.observe(99, None),  # never handed out
        lambda: searcher.discard(99),
    ):
        with pytest.raises(EvosearchError, match="is not pending"):
            call()
    with pytest.raises(EvosearchError, match="expected 2 scores, got 1"):
        searcher.observe(b.id, (0.5,))
    assert json.dumps(searcher.state_dict()) == before  # b is still pending, nothing else moved


def test_state_through_json_into_a_new_instance_continues_identically(algorithm):
    straight = make(algorithm, seed=3)
    expected = [signature(p) for p in drive(straight, 40)]

    first = make(algorithm, seed=3)
    answered = drive(first, 15)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(algorithm, seed=99)  # the generator's seed is overwritten by the state
    resumed.load_state_dict(state)
    assert [signature(p) for p in resumed.pending.values()] == [signature(p) for p in first.pending.values()]
    answered += drive(resumed, 25)
    assert [signature(p) for p in answered] == expected
    assert resumed.state_dict() == straight.state_dict()


def test_a_failed_evaluation_scores_worst_on_every_objective():
    evolution = make("evolution")
    proposal = evolution.suggest()
    evolution.observe(proposal.id, None)
    assert [m.scores for m in evolution.population] == [(WORST_SCORE, WORST_SCORE)]


def test_random_search_gives_the_seeds_then_only_random_graphs():
    searcher = make("random", seed=1)
    answered = drive(searcher, 40)
    assert [p.graph for p in answered[:3]] == SEEDS
    assert {p.origin for p in answered[3:]} == {"random"}
    assert all(p.parent is None and p.mutation is None for p in answered)  # nothing is ever mutated
    assert len({p.graph.structural_hash() for p in answered[3:]}) > 30  # independent draws
    for p in answered[3:]:  # drawn from the search space
        p.graph.validate(allowed_ops=searcher.space.ops)
        assert len(p.graph.op_nodes) <= searcher.space.max_nodes


def test_search_algorithm_is_chosen_in_the_run_config():
    config = from_dict(RunConfig, {"search": {"algorithm": "random", "seeds": ["bn_relu"]}})
    searcher = config.search.searcher(num_objectives=1, seed=0)
    assert isinstance(searcher, RandomSearch) and searcher.seeds == [seed_graph("bn_relu")]
    evolution = SearchConfig(population_size=7).searcher(num_objectives=1, seed=0)
    assert isinstance(evolution, RegularizedEvolution) and evolution.settings.population_size == 7
    with pytest.raises(ConfigError, match=r"^search\.algorithm: unknown search algorithm 'genetic'"):
        load_run_config(None, ["search.algorithm=genetic"])


def test_evolution_settings_have_one_default():
    default = SearchConfig()
    assert default.searcher(num_objectives=1, seed=0).settings == EvolutionSettings()
    assert default.population_size == EvolutionSettings().population_size == 50  # as documented


def test_checkpoints_name_their_algorithm_and_old_ones_read_as_evolution():
    state = make("random").state_dict()
    assert searcher_state({"version": 2, "algorithm": "random", "searcher": state}) == ("random", state)
    assert searcher_state({"version": 1, "evolution": state}) == ("evolution", state)
