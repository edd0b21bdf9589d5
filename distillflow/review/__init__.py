"""Human review in Argilla: push curated records, pull decisions back, run a local server.

    from distillflow.review.push import push
    from distillflow.review.pull import pull
    push("runs/qa"); ...review in the Argilla UI...; pull("runs/qa")

``launch.py`` and ``osmem_adapter.py`` run inside the Argilla server's own venv and import
nothing from distillflow.
"""
