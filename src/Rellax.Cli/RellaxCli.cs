using System.CommandLine;

namespace Rellax.Cli;

/// <summary>
/// The <c>rellax</c> command tree and its entry point. Every subcommand has --help and exits 0 on success, 1 on bad input
/// (one line on stderr, <see cref="ParseErrors"/> and <see cref="CommonOptions.Guard(Func{int})"/>), 130 when interrupted.
/// </summary>
internal static class RellaxCli
{
    /// <summary>The root command with every subcommand.</summary>
    public static RootCommand CreateRoot()
    {
        var root = new RootCommand("Rellax: fast ReLLaX-style LLM recommendation kernels and runtime for .NET.");
        root.Add(GenerateCommand.Create());
        root.Add(ScoreCommand.Create());
        root.Add(EmbedCommand.Create());
        root.Add(BackendsCommand.Create());
        root.Add(SelftestCommand.Create());
        root.Add(IndexCommand.Create());
        root.Add(RetrieveCommand.Create());
        root.Add(PrepareCommand.Create());
        root.Add(EvalCommand.Create());
        root.Add(ExportCommand.Create());
        root.Add(CrmCommand.Create());
        root.Add(TrainCommand.Create());
        root.Add(DemoCommand.Create());
        return root;
    }

    /// <summary>Parses <paramref name="args"/> and runs the command; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        var root = CreateRoot();
        var parsed = root.Parse(args);
        if (ParseErrors.Report(root, parsed, args) is int code) return code;
        return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }
}
