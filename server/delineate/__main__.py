from delineate.cli import main

raise SystemExit(main())
