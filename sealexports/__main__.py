from sealexports.cli import main

main()
