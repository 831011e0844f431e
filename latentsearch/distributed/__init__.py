"""Work spread over a Ray cluster: encoding (:mod:`.encoding`) and index shard builds.

Ray is an optional extra (``pip install 'latentsearch[distributed]'``); nothing here imports it
until a distributed call is made.
"""
