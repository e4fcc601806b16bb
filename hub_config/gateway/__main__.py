"""``python -m afhub.hub_config.gateway``: run the Dask Gateway process."""

from .process import main

main()
