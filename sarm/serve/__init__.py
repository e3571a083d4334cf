"""``sarm serve``: an HTTP reward server over an exported reward model, on LitServe (dynamic batching).

``requests`` reads and checks request bodies, ``middleware`` answers bad ones before they can join a batch,
``scoring`` scores a batch with ``RewardModel``, ``api`` is the LitServe API and ``server`` the command.
"""
