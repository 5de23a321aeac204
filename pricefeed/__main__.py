from pricefeed.cli import main

raise SystemExit(main())
