"""The vault task (:mod:`verl_sdar.envs.vault.env`): a multi-turn text game with an early decision
that pays off only at the end, built for the credit-assignment experiment; agent loop ``vault``."""
