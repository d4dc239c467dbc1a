"""The SFT stage's room: the supervised warm start before RL, plain or progressive.

- ``stage``: :class:`~eg_grpo.sft.stage.SFTScriptArguments` and :func:`~eg_grpo.sft.stage.run`, what
  ``python -m eg_grpo.stages sft`` and ``recipes/sft.py`` call;
- ``model``: its building blocks (the base model with SID tokens, LoRA settings, a time limit, the saved
  model), also used by the RL room;
- ``progressive``: progressive SFT, a list of stages each run by :func:`~eg_grpo.sft.stage.run` (which it
  is handed, so it does not import the stage);
- ``trainer``: TRL's ``SFTTrainer`` with the LM head scoring only labelled positions on every device
  (also the RL room's continued-SFT control);
- ``tasks``: the row builders of the SFT tasks (``item_to_sid``, ``query_to_sid``, ``personalized``).

The request rows themselves (``eg_grpo.data.sft_dataset``) stay in ``eg_grpo.data``: RL's rows, evaluation
and the stages read them too. This ``__init__`` imports nothing; nothing here imports the RL room.
``tests/test_import_structure.py`` holds the room to this line:

May import: eg_grpo.checkpoints, eg_grpo.data, eg_grpo.io, eg_grpo.modeling, eg_grpo.sid
"""
