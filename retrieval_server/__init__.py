"""Retrieval server for the Search-R1 `/retrieve` contract. sage_rl may import only `retrieval_server.client`."""
