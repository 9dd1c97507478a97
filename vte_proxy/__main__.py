from vte_proxy.cli import main

raise SystemExit(main())
