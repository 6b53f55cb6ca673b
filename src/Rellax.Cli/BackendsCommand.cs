using System.CommandLine;
using System.Text.Json;
using Rellax.Kernels;

namespace Rellax.Cli;

/// <summary><c>rellax backends</c>: which backends this machine offers and on what device each would run.</summary>
internal static class BackendsCommand
{
    public static Command Create()
    {
        var json = CommonOptions.Json();
        var cmd = new Command("backends", """
        List the compute backends (cpu, ilgpu, cuda) and the device each would use here; --backend picks one in every command.

        Examples:
          rellax backends
          rellax backends --json
        """) { json };
        cmd.SetAction(r => CommonOptions.Guard(() =>
        {
            var rows = Backends.Describe();
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(rows.Select(b => new { name = b.Name, available = b.Available, detail = b.Detail })));
            else
                foreach (var b in rows) Console.WriteLine($"{b.Name,-6} {(b.Available ? "available  " : "unavailable")} {b.Detail}");
            return 0;
        }));
        return cmd;
    }
}
