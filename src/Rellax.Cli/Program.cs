// `rellax`: the command line over the Rellax runtime (see Rellax.Cli.RellaxCli).
return Rellax.Cli.RellaxCli.Run(args);
