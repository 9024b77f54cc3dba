"""The built-in default config (used when --config is not given)."""

from nst_jax.config import get_default_config


def get_config():
  return get_default_config()
