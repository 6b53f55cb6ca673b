using System.CommandLine;
using System.Text.Json;
using Rellax.Kernels;

namespace Rellax.Cli;

/// <summary><c>rellax backends</c>: which backends and devices this machine offers.</summary>
internal static class BackendsCommand
{
    public static Command Create()
    {
        var json = CommonOptions.Json();
        var cmd = new Command("backends", "List the compute backends and devices available here.") { json };
        cmd.SetAction(r => CommonOptions.Guard(() =>
        {
            var rows = Backends.Names.Select(n => new { name = n }).ToList();
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(rows));
            else foreach (var row in rows) Console.WriteLine(row.name);
            return 0;
        }));
        return cmd;
    }
}
