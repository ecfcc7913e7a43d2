"""The paper's published tables (Marks et al. 2023), shown in the claim reports beside the measured ones."""

# Table 3: logistic probe accuracy on the feedback sign: [model, task, accuracy]
TABLE_3 = [["Pythia-70m", "HH", 0.9992], ["Pythia-160m", "HH", 1.0], ["GPT-Neo-125m", "HH", 0.999],
           ["Gemma-2b", "HH", 0.9997], ["Pythia-70m", "toxic", 0.9988], ["Pythia-160m", "toxic", 0.999],
           ["GPT-Neo-125m", "toxic", 0.998], ["Gemma-2b", "toxic", 0.9988]]
# Table 4: Kendall tau of the VADER probe's prediction against the lexicon: [model, tau, p-value]
TABLE_4 = [["Pythia-70m", 0.042, 0.26], ["Pythia-160m", 0.093, 0.014], ["GPT-Neo-125m", 0.023, 0.48],
           ["Baseline (Xavier)", -0.037, 0.55]]
# Table 5: sign accuracy of the VADER probe: [model, positive words, negative words]
TABLE_5 = [["GPT-Neo-125m", 0.764, 0.842], ["Pythia-70m", 0.8138, 0.9219], ["Pythia-160m", 0.824, 0.906]]
# Table 6: fine-tuning reward: [model, before ablation, after ablation]
TABLE_6 = [["Pythia-70m", 2.07, 1.96], ["Pythia-160m", 1.95, 1.69], ["GPT-Neo-125m", 1.43, 1.43]]
# Table 7: activation frequency on inputs with delta > 3: [model, labelled features, average feature]
TABLE_7 = [["Pythia-70m", 0.19, 0.091], ["Pythia-160m", 0.197, 0.041], ["GPT-Neo-125m", 0.139, 0.042]]
# Tables 2 and 9 (GPT-Neo-125m): token -> (predicted, VADER) as published
TABLE_2_9 = {"award": (1.4, 2.5), "loved": (2.0, 2.9), "great": (1.0, 3.1), "precious": (-0.81, 2.7),
             "beautifully": (0.64, 2.7), "marvelous": (1.28, 2.9), "despised": (-2.2, -1.7), "weak": (-2.2, -1.9),
             "dreadful": (-2.6, -1.9), "cowardly": (-2.53, -1.6), "bad": (-2.29, -2.5), "fun": (1.9, 2.3),
             "miserable": (-3.3, -2.2), "brilliant": (1.3, 2.8), "terrible": (-1.9, -2.1), "funny": (0.7, 1.9),
             "boring": (-2.8, -1.3), "amazing": (1.3, 2.8), "wonderful": (0.9, 2.7), "good": (1.4, 1.9)}
