using System.CommandLine;
using Rellax.Cli;

// `rellax`: the command line over the Rellax runtime. Every subcommand has --help and exits 0 only on success.
var root = new RootCommand("Rellax: fast ReLLaX-style LLM recommendation kernels and runtime for .NET.");
root.Add(GenerateCommand.Create());
root.Add(ScoreCommand.Create());
root.Add(EmbedCommand.Create());
root.Add(BackendsCommand.Create());
root.Add(IndexCommand.Create());
root.Add(RetrieveCommand.Create());
root.Add(PrepareCommand.Create());
root.Add(EvalCommand.Create());
root.Add(ExportCommand.Create());
root.Add(DemoCommand.Create());
root.Add(CrmCommand.Create());
return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
