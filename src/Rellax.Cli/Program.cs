using System.CommandLine;
using Rellax.Cli;

// `rellax`: the command line over the Rellax runtime. Every subcommand has --help and exits 0 only on success, 1 on bad
// input (one line on stderr), 130 when interrupted.
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
var parsed = root.Parse(args);
if (ParseErrors.Report(root, parsed, args) is int code) return code;
return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
