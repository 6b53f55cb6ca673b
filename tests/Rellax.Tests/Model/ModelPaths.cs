using NUnit.Framework;
namespace Rellax.Tests.Model;

/// <summary>Finds the embedded default model (models/stories260K in the repository) from the test assembly.</summary>
internal static class ModelPaths
{
    public static string Stories260K
    {
        get
        {
            for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "stories260K");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
            throw new DirectoryNotFoundException("models/stories260K not found above " + TestContext.CurrentContext.TestDirectory);
        }
    }

    /// <summary><see cref="Stories260K"/>, or the test is ignored with a message saying where it was looked for.</summary>
    public static string Stories260KOrIgnore()
    {
        try
        {
            return Stories260K;
        }
        catch (DirectoryNotFoundException e)
        {
            Assert.Ignore($"stories260K is absent ({e.Message}); copy it from shared/data or the repository's models/ to run this test");
            throw;
        }
    }
}
