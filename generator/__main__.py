from sae_atlas.cli import main

raise SystemExit(main())
