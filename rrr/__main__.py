"""`python -m rrr ...` is the `rrr` command: what a Ray job runs from its working_dir when the
cluster installs only the dependencies (cluster/runtime_env.yaml), not the project itself."""

from rrr.driver.cli import main

raise SystemExit(main())
