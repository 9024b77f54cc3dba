from nst_jax.main import cli

cli()
