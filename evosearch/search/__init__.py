"""Search algorithms over layer graphs: what to evaluate next. No torch, no Ray.

- :mod:`.mutation`: the search space, mutation operators and random graphs.
- :mod:`.evolution`: regularized (aging) evolution with a Pareto tournament.
"""
