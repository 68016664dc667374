from streamstop.cli import main

raise SystemExit(main())
