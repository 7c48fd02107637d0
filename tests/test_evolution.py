"""The evolution algorithm alone: proposals, Pareto tournament, aging, state round trip."""

from __future__ import annotations

import json
import random

import pytest

from evosearch.errors import EvosearchError
from evosearch.layers.seeds import seed_graph
from evosearch.search.evolution import EvolutionSettings, RegularizedEvolution
from evosearch.search.mutation import SearchSpace
from evosearch.search.searcher import WORST_SCORE

SEEDS = [seed_graph(n) for n in ("bn_relu", "gn_relu", "evonorm_s0")]


def make(seed: int = 0, **settings) -> RegularizedEvolution:
    defaults = {"population_size": 8, "tournament_size": 4, "seed_mutations": 2, "random_graphs": 2}
    return RegularizedEvolution(
        EvolutionSettings(**(defaults | settings)), SearchSpace(), SEEDS, num_objectives=2, seed=seed
    )


def fake_scores(proposal, salt: int = 0) -> tuple[float, float]:
    """Deterministic scores from the graph's hash (a stand-in for training)."""
    h = int(proposal.graph.structural_hash(), 16) + salt
    return (h % 1000) / 1000, (h // 1000 % 1000) / 1000


def drive(evo: RegularizedEvolution, steps: int, in_flight: int = 1) -> list[str]:
    """Suggest/observe with up to `in_flight` pending, like the driver; returns the hashes."""
    hashes, pending = [], []
    for _ in range(steps):
        while len(pending) < in_flight:
            pending.append(evo.suggest())
        proposal = pending.pop(0)
        hashes.append(proposal.graph.structural_hash())
        if proposal.id % 5 == 4:
            evo.discard(proposal.id)
        else:
            evo.observe(proposal.id, fake_scores(proposal))
    return hashes


def test_initial_proposals_are_seeds_then_seed_mutations_then_random():
    evo = make()
    origins = [evo.suggest().origin for _ in range(len(SEEDS) + 5)]
    assert origins == ["seed"] * 3 + ["seed_mutation"] * 2 + ["random"] * 2 + ["random"]  # empty population


def test_children_are_mutations_of_population_members():
    evo = make()
    drive(evo, 12)
    proposal = evo.suggest()
    assert proposal.origin == "mutation"
    assert proposal.parent in {m.id for m in evo.population}
    assert proposal.mutation is not None
    assert proposal.graph.structural_hash() != next(
        m.graph.structural_hash() for m in evo.population if m.id == proposal.parent
    )


def test_aging_keeps_population_size_and_removes_the_oldest():
    evo = make(population_size=5)
    drive(evo, 30)
    ids = [m.id for m in evo.population]
    assert len(ids) == 5
    assert ids == sorted(ids)  # the survivors are the most recent members, in arrival order


def test_failed_evaluation_scores_worst_and_discard_never_joins():
    evo = make()
    a, b = evo.suggest(), evo.suggest()
    evo.observe(a.id, None)
    evo.discard(b.id)
    assert [(m.id, m.scores) for m in evo.population] == [(a.id, (WORST_SCORE, WORST_SCORE))]
    with pytest.raises(EvosearchError, match="not pending"):
        evo.observe(b.id, (0.5, 0.5))
    with pytest.raises(EvosearchError, match="expected 2 scores"):
        evo.observe(evo.suggest().id, (0.5,))


def test_tournament_winner_is_on_the_pareto_front_of_the_sample():
    evo = make(population_size=6, tournament_size=6, seed_mutations=0, random_graphs=0)
    scores = {0: (0.9, 0.1), 1: (0.1, 0.9), 2: (0.5, 0.5), 3: (0.4, 0.4), 4: (0.05, 0.05), 5: (0.2, 0.1)}
    for i in range(6):
        p = evo.suggest()
        evo.observe(p.id, scores[i % 3] if i < 3 else scores[i])
    front = {0, 1, 2}  # 3, 4, 5 are dominated by 2
    winners = {evo._tournament().id for _ in range(200)}
    assert winners == front


def test_same_seed_same_search_different_seed_differs():
    assert drive(make(seed=1), 25, in_flight=3) == drive(make(seed=1), 25, in_flight=3)
    assert drive(make(seed=1), 25) != drive(make(seed=2), 25)


@pytest.mark.parametrize("in_flight", [1, 3])
def test_state_round_trip_through_json_continues_identically(in_flight):
    straight = make(seed=3)
    expected = drive(straight, 30, in_flight)

    first = make(seed=3)
    pending = []
    hashes = []
    for _ in range(12):  # the same drive, interrupted after 12 observations
        while len(pending) < in_flight:
            pending.append(first.suggest())
        p = pending.pop(0)
        hashes.append(p.graph.structural_hash())
        first.discard(p.id) if p.id % 5 == 4 else first.observe(p.id, fake_scores(p))
    state = json.loads(json.dumps(first.state_dict()))

    resumed = make(seed=99)  # the seed is overwritten by the state
    resumed.load_state_dict(state)
    pending = sorted(resumed.pending.values(), key=lambda p: p.id)
    assert [p.id for p in pending] == sorted(state_p["id"] for state_p in state["pending"])
    for _ in range(18):
        while len(pending) < in_flight:
            pending.append(resumed.suggest())
        p = pending.pop(0)
        hashes.append(p.graph.structural_hash())
        resumed.discard(p.id) if p.id % 5 == 4 else resumed.observe(p.id, fake_scores(p))
    assert hashes == expected


def test_settings_are_checked():
    with pytest.raises(EvosearchError):
        EvolutionSettings(population_size=1)
    with pytest.raises(EvosearchError, match="mutation weights"):
        EvolutionSettings(mutation_weights={"crossover": 1.0})
    with pytest.raises(EvosearchError, match="mutation weights"):
        EvolutionSettings(mutation_weights={"insert": 0.0})


def test_population_graphs_are_valid_and_mutations_respect_the_space():
    space = SearchSpace(ops=SearchSpace().ops - {"batch_mean", "batch_var", "batch_std", "batch_rms"})
    evo = RegularizedEvolution(
        EvolutionSettings(population_size=10, seed_mutations=3, random_graphs=3),
        space,
        [seed_graph("evonorm_s0")],
        num_objectives=1,
        seed=0,
    )
    rng = random.Random(0)
    for _ in range(40):
        p = evo.suggest()
        p.graph.validate()
        if p.origin in ("mutation", "random", "seed_mutation"):
            assert not p.graph.batch_dependent
        evo.observe(p.id, (rng.random(),))
