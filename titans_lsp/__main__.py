from titans_lsp.cli import main

raise SystemExit(main())
